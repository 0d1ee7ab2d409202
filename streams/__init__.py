"""Stream processing: the topics, the stages (one module each under agents/), their transactional runtime."""
