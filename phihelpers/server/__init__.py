"""The embedded local model server: llama.cpp behind the Azure AI Model Inference API."""
