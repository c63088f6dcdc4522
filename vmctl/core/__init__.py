"""The operations users ask for, each raising typed errors; the CLI is a thin layer over these."""
