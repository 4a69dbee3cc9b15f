"""The rclpy nodes: thin wiring around the transport-free pipelines (rclpy is imported only here)."""
