"""docker_env projects: images found, pulled or built and containers run through the docker SDK."""
