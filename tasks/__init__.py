"""lossforge.tasks: Task definitions, built-in tasks, the population-batched trainer and metrics."""
