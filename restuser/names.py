"""Which account names restuser accepts: a strict pattern plus a deny list."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

# Lowercase POSIX portable filename characters, starting with a letter, at most 32 long.
DEFAULT_NAME_PATTERN = r"[a-z][a-z0-9_-]{0,31}"

# Names that must never become hub accounts even if no such account exists yet: a package
# installed later creates its system user or group with adduser, which fails (or, for a
# group, quietly makes the hub user a member) when the name is taken. Shell globs.
DEFAULT_DENY_NAMES = (
    # Debian base-passwd users and groups
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
    "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "adm", "tty",
    "disk", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo", "audio",
    "dip", "operator", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff", "users",
    "input", "sgx", "kvm", "render", "netdev", "crontab", "lpadmin", "ssl-cert",
    # systemd, Debian's underscore accounts (_apt, _chrony, _rpc, ...) and Debian-* ones
    "systemd-*", "_*", "Debian-*", "messagebus", "polkitd", "tss", "uuidd", "syslog",
    "klog", "sshd", "ssh", "statd", "nscd", "nslcd", "sssd", "dhcpcd", "fwupd-refresh",
    # desktop, printing, sound, hardware
    "avahi", "avahi-autoipd", "colord", "geoclue", "pulse", "pulse-access", "rtkit", "saned",
    "scanner", "usbmux", "bluetooth", "cups-pk-helper", "hplip", "speech-dispatcher", "gdm",
    "lightdm", "sddm", "whoopsie", "kernoops", "i2c", "gpio", "spi", "wireshark",
    # network and mail daemons
    "dnsmasq", "tcpdump", "ntp", "ntpsec", "chrony", "postfix", "postdrop", "exim", "smmsp",
    "dovecot", "dovenull", "bind", "named", "unbound", "squid", "haproxy", "openldap", "ftp",
    "nginx", "apache", "apache2", "httpd", "www", "snmp", "clamav", "amavis", "opendkim",
    # virtualisation and containers
    "lxd", "incus", "incus-admin", "libvirt", "libvirt-*", "docker", "containerd", "podman",
    "vboxusers",
    # databases and services often installed beside a hub
    "postgres", "mysql", "mariadb", "redis", "mongodb", "memcache", "memcached", "rabbitmq",
    "elasticsearch", "couchdb", "influxdb", "grafana", "prometheus", "nagios", "zabbix",
    "munin", "jenkins", "gitlab", "git", "tomcat*", "jetty", "solr", "landscape", "pollinate",
    # administrators and this hub's own names
    "admin", "administrator", "wheel", "jupyterhub", "jovyan", "hub-*",
)  # fmt: skip


class BadName(ValueError):
    """The name can never be an account name here (HTTP 400)."""


class RefusedName(ValueError):
    """The name is well formed but reserved or denied (HTTP 403)."""


@dataclass(frozen=True)
class NamePolicy:
    pattern: str = DEFAULT_NAME_PATTERN
    deny: tuple[str, ...] = field(default=DEFAULT_DENY_NAMES)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_compiled", re.compile(self.pattern))
        # All deny globs as one regex: checked on every request, lookups included.
        denied = "|".join(fnmatch.translate(glob) for glob in self.deny) or r"(?!)"
        object.__setattr__(self, "_denied", re.compile(denied))

    def check(self, name: str) -> str:
        """Return `name` if it may be an account name; raise BadName or RefusedName."""
        # fullmatch, not match with "$": "$" would accept a trailing newline.
        compiled = self._compiled  # type: ignore[attr-defined]
        if not isinstance(name, str) or not compiled.fullmatch(name):
            raise BadName(f"account names must match {self.pattern}")
        if name.startswith("-") or not name.isascii():
            raise BadName("account names must not look like an option or hold non-ASCII")
        if self._denied.match(name):  # type: ignore[attr-defined]
            raise RefusedName(f"{name!r} is a reserved name")
        return name
