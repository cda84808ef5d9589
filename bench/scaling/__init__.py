"""How a suite scales: `bench scale` measures it cold on 1, 2, … LLM workers of this machine
(run.py, report.py); `bench project` projects it onto 1 … N GPUs from those measurements and the
committed GPU throughput cost models (inputs.py, model.py, project.py)."""
