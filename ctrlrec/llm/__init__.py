"""LLM layer: packaged models, prompt templates, backends behind one interface, a persistent cache."""
