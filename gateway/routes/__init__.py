"""The gateway's routers, one per resource; gateway/app.py includes them in order."""
