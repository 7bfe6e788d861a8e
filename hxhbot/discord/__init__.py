"""Everything that speaks Discord: the bot, its cogs, replies and feedback buttons, on top of hxhbot.engine."""
