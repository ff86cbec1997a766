"""Pipeline orchestration (EnhancedPipelineManager, DistributedPipelineManager); see issue 5."""
