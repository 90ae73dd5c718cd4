"""Embedding pipeline domain: chunking, hashing, the embedder interface, vector index and RAG context assembly.

Pieces here are pure (numpy and the store interface only); vendor SDKs live in core/adapters/.
"""
