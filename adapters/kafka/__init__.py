"""The Kafka adapter: the only package that imports aiokafka or touches its internals."""
