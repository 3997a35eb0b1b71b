#!/bin/sh
# The macOS disk image: dist/DistillStudio.app (built by `make bundle` on a Mac: PyInstaller's BUNDLE step in
# distill-studio.spec) into dist/DistillStudio-<version>-macos-<arch>.dmg, with a link to /Applications to drag it
# onto. Uses hdiutil, which every Mac has. Unsigned: a person opens it the first time with right-click › Open (or
# the team signs and notarises it with its Developer ID: codesign --deep --options runtime, then notarytool).
set -e
here="$(cd "$(dirname "$0")/../.." && pwd)"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("'"$here"'/pyproject.toml", "rb"))["project"]["version"])')"
arch="$(uname -m)"
app="$here/dist/DistillStudio.app"
[ -d "$app" ] || { echo "no $app: run 'make bundle' on this Mac first" >&2; exit 2; }
stage="$(mktemp -d)"
cp -R "$app" "$stage/"
ln -s /Applications "$stage/Applications"
out="$here/dist/DistillStudio-$version-macos-$arch.dmg"
rm -f "$out"
hdiutil create -volname "Distill Studio $version" -srcfolder "$stage" -ov -format UDZO "$out"
rm -rf "$stage"
echo "dmg: $out"
