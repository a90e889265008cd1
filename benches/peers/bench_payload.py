"""The 10-key document every server's /json handler returns (test d).

Each handler calls payload() per request, so every server builds the same
dict and encodes it with its own JSON path. Keep in sync with
pyrs::native::JSON_10_KEYS (the no-Python ceiling's /json).
"""


def payload():
    return {
        "id": 12345,
        "name": "pyrs",
        "active": True,
        "score": 98.5,
        "tags": ["http", "python", "rust"],
        "owner": {"login": "bench", "id": 1},
        "count": 10,
        "ratio": 0.25,
        "note": None,
        "version": "1.0.0",
    }
