"""Our own goal environments; importing ideas_envs.register_envs registers them with gymnasium."""
