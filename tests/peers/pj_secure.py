#!/usr/bin/env python3
"""pjsua2 caller for Switchboard's SIP over TLS + SRTP interop test.

Calls a `;transport=tls` SIP URI from 127.0.0.1, verifying the server certificate against a CA
file, with SRTP (SDES) mandatory and only over TLS. Plays a WAV as the microphone, records what
it hears to a WAV, stays on the call for a while, hangs up and prints one JSON line: whether the
call was answered, the codec, and the RTP packets received and sent.
"""

import argparse
import sys

import pjsua2 as pj

import pjphone


class Call(pjphone.TrackedCall):
    def __init__(self, acc, mic, heard):
        super().__init__(acc)
        self.mic_file, self.heard_file = mic, heard
        self.player = self.recorder = None

    def on_audio(self, media):
        if self.player is None:
            self.player = pj.AudioMediaPlayer()
            self.player.createPlayer(self.mic_file, pj.PJMEDIA_FILE_NO_LOOP)
            self.recorder = pj.AudioMediaRecorder()
            self.recorder.createRecorder(self.heard_file)
        self.player.startTransmit(media)
        media.startTransmit(self.recorder)

    def release(self):
        self.player = self.recorder = None


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--call", required=True, help="SIP URI to call (;transport=tls)")
    ap.add_argument("--ca", required=True, help="PEM CA file that signed the server")
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--mic", required=True, help="8 kHz mono WAV to send")
    ap.add_argument("--heard", required=True, help="WAV to record what is heard into")
    ap.add_argument("--seconds", type=float, default=15)
    args = ap.parse_args()

    def trust(tls):
        tls.CaListFile = args.ca
        tls.verifyServer = True
        tls.method = pj.PJSIP_TLSV1_2_METHOD

    def srtp(acfg):
        # SDES SRTP, mandatory, and only with TLS signalling.
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
        acfg.mediaConfig.srtpSecureSignaling = 1

    def talk(call, result):
        pjphone.pump(ep, args.seconds, lambda: call.disconnected)
        stat = call.getStreamStat(0)
        result["rx_packets"] = stat.rtcp.rxStat.pkt
        result["tx_packets"] = stat.rtcp.txStat.pkt
        result["rx_discard"] = stat.rtcp.rxStat.discard

    ep = pjphone.endpoint(pj.PJSIP_TRANSPORT_TLS, log_level=4, tls=trust)
    acc = pjphone.account(args.rtp_port, srtp)
    code = pjphone.run(ep, Call(acc, args.mic, args.heard), args.call, talk)
    del acc
    ep.libDestroy()
    return code


if __name__ == "__main__":
    sys.exit(main())
