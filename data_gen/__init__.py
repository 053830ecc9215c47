"""data_gen: run questions through the RAG pipeline and one model; write a resumable, versioned dataset."""
