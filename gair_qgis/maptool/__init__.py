"""Similarity map tool: click the canvas, get a similarity layer and the top-k most similar places."""
