"""The management HTTP API (FastAPI), served by uvicorn inside the broker's event loop."""
