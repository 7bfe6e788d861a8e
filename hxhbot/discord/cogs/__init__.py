"""One cog per concern: /whois and "Who is this?", watched channels, owner commands."""
