"""What the producer, the scaler and the workers share: job-type config, queue declaration, connection settings and the scaler-worker control messages."""

from common.config import ConfigError, JobsConfig, JobType, load_config, parse_config

__all__ = ["ConfigError", "JobsConfig", "JobType", "load_config", "parse_config"]
