"""The ranking tier on Ray Serve: replicas of the ranking model behind a gRPC front-end."""
