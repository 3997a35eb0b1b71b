#!/bin/sh
# Install the unpacked tarball for this user: a launcher in ~/.local/bin and the desktop entry and icon, pointing
# at this folder (move the folder first if you want it elsewhere). Remove with: rm ~/.local/bin/distill-studio
# ~/.local/bin/distill ~/.local/share/applications/distill-studio.desktop
set -e
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$HOME/.local/bin" "$HOME/.local/share/applications" "$HOME/.local/share/icons/hicolor/256x256/apps"
ln -sf "$here/DistillStudio" "$HOME/.local/bin/distill-studio"
ln -sf "$here/distill" "$HOME/.local/bin/distill"
cp "$here/distill-studio.png" "$HOME/.local/share/icons/hicolor/256x256/apps/distill-studio.png"
sed "s|Exec=distill-studio|Exec=$here/DistillStudio|" "$here/distill-studio.desktop" \
    > "$HOME/.local/share/applications/distill-studio.desktop"
echo "Distill Studio installed: run 'distill-studio', or find it in your applications menu."
