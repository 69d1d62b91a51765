"""The protocol between the two halves: the metric catalog, the push wire format, and
its validation. Shared by the app side and the sidecar; imports neither (nor SQLAlchemy).
"""
