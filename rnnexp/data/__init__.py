"""Data modules. Each declares a TaskSpec so the LightningModule can pick head, loss and metrics."""
