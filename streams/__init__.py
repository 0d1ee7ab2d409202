"""Stream processing: the topics, the list of stages (stages.py) and their handlers (one module each under
agents/); the transactional runtime they run on is the Kafka adapter's (adapters/kafka/)."""
