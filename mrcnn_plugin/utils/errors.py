"""Errors a user can cause that no standard exception names well."""

__all__ = ["DeviceUnavailableError"]


class DeviceUnavailableError(RuntimeError):
    """The requested device (e.g. cuda) is not available on this machine."""
