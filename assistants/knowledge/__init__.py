"""Knowledge: files an assistant answers from (.txt, .md, .pdf, .html, .csv, .json), extracted
(extract.py), cut into chunks the embedder reads whole (chunks.py), stored and searched
(knowledge.py), held in memory (held.py), ranked by meaning and by words (ranking.py), and found
for each message (context.py)."""

from assistants.knowledge.knowledge import Chunk, Found, Knowledge, KnowledgeFile

__all__ = ["Chunk", "Found", "Knowledge", "KnowledgeFile"]
