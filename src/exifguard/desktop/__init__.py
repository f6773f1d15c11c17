"""Everyday desktop integration: start at login (`service`), the system proxy setting
(`sysproxy`) and desktop notifications (`notify`).

These modules know the operating systems' own tools (systemd, launchd, Task Scheduler,
gsettings, networksetup, the Windows registry, notification services) and nothing of
mitmproxy: the proxy and the CLI use them, never the other way round. Every change they
make to the system can be printed first (`--dry-run`), because a privacy tool must say
exactly what it touches.
"""
