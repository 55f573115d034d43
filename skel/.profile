# ~/.profile: read by login shells (terminals opened from Jupyter are login shells here).

# Personal tools installed with `pip install --user` land in ~/.local/bin.
if [ -d "$HOME/.local/bin" ]; then
    PATH="$HOME/.local/bin:$PATH"
fi

# New files are private to you unless you share them on purpose.
umask 077

# Bash reads ~/.bashrc only for interactive non-login shells; bring it in here too.
if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then
    . "$HOME/.bashrc"
fi
