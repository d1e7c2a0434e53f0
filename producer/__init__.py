"""The upload service: CSV files in, one confirmed RabbitMQ message per row out."""
