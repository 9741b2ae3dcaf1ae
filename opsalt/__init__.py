"""opsalt: SaltStack extensions installed through the ``salt.loader`` entry point."""
