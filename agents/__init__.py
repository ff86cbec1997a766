"""The dev, QA, fix and deploy agents; see issue 5."""
