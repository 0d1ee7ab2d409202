"""Agency-side publishing: seal, sign and send indicator reports; simulated agencies."""

from producers.publisher import AgencyPublisher, PublishOutcome, seal_report

__all__ = ["AgencyPublisher", "PublishOutcome", "seal_report"]
