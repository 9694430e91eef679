#!/usr/bin/env bash
# Renders the audio previews linked from the README: each of the four default corners (4 bars)
# and a morph around them (A -> B -> D -> C, 16 bars), played by `drumvae render` with the
# embedded model (or --model FILE), synthesised through a General MIDI drum kit with fluidsynth
# and encoded as OGG Vorbis.
#
#   docs/previews/make.sh [--model FILE] [--tempo BPM]
#
# Needs fluidsynth, a GM soundfont and oggenc: on Debian/Ubuntu
#   apt-get install fluidsynth timgm6mb-soundfont vorbis-tools
# (SF2=path picks another soundfont, e.g. /usr/share/sounds/sf2/FluidR3_GM.sf2 from
# fluid-soundfont-gm).
set -euo pipefail
cd "$(dirname "$0")/../.."

model=()
tempo=110
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=(--model "$2"); shift 2 ;;
    --tempo) tempo="$2"; shift 2 ;;
    *) echo "unknown argument $1 (use --model FILE, --tempo BPM)" >&2; exit 2 ;;
  esac
done

sf2="${SF2:-/usr/share/sounds/sf2/TimGM6mb.sf2}"
for tool in fluidsynth oggenc; do
  command -v "$tool" >/dev/null || {
    echo "$tool is missing: apt-get install fluidsynth timgm6mb-soundfont vorbis-tools" >&2
    exit 1
  }
done
[ -f "$sf2" ] || { echo "no soundfont at $sf2: apt-get install timgm6mb-soundfont, or set SF2" >&2; exit 1; }

cargo build --release --bin drumvae
drumvae=target/release/drumvae
out=docs/previews
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

synth() { # MIDI file -> OGG file
  fluidsynth -ni -q -g 1.0 -r 44100 -F "$tmp/out.wav" "$sf2" "$1" >/dev/null
  oggenc -Q -q 4 -o "$2" "$tmp/out.wav"
}

# Corner positions on the pad: A (0,0), B (1,0), C (0,1), D (1,1).
for corner in a:0:0 b:1:0 c:0:1 d:1:1; do
  IFS=: read -r name x y <<<"$corner"
  "$drumvae" render "${model[@]}" --tempo "$tempo" --bars 4 --morph-x "$x" --morph-y "$y" \
    --out "$tmp/corner-$name.mid" >/dev/null
  synth "$tmp/corner-$name.mid" "$out/corner-$name.ogg"
done
# 16 bars: A -> B over bars 1-4, B -> D over 5-8, D -> C over 9-12, C held for 13-16.
"$drumvae" render "${model[@]}" --tempo "$tempo" --bars 16 \
  --morph-x 0:0,4:1,8:1,12:0 --morph-y 0:0,4:0,8:1 --out "$tmp/morph.mid" >/dev/null
synth "$tmp/morph.mid" "$out/morph.ogg"
ls -l "$out"/*.ogg
