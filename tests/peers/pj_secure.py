#!/usr/bin/env python3
"""pjsua2 caller for Switchboard's SIP over TLS + SRTP interop test.

Calls a `;transport=tls` SIP URI from 127.0.0.1, verifying the server certificate against a CA
file, with SRTP (SDES) mandatory and only over TLS. Plays a WAV as the microphone, records what
it hears to a WAV, stays on the call for a while, hangs up and prints one JSON line: whether the
call was answered, the codec, and the RTP packets received and sent.
"""

import argparse
import json
import sys
import time

import pjsua2 as pj


class Call(pj.Call):
    def __init__(self, acc, mic, heard):
        super().__init__(acc)
        self.confirmed = False
        self.disconnected = False
        self.media_active = False
        self.status = None
        self.mic_file, self.heard_file = mic, heard
        self.player = self.recorder = None

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.confirmed = True
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            self.status = info.lastStatusCode

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for m in info.media:
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media_active = True
                media = self.getAudioMedia(m.index)
                if self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(self.mic_file, pj.PJMEDIA_FILE_NO_LOOP)
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(self.heard_file)
                self.player.startTransmit(media)
                media.startTransmit(self.recorder)


def pump(ep, seconds, until=lambda: False):
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        ep.libHandleEvents(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--call", required=True, help="SIP URI to call (;transport=tls)")
    ap.add_argument("--ca", required=True, help="PEM CA file that signed the server")
    ap.add_argument("--rtp-port", type=int, required=True)
    ap.add_argument("--mic", required=True, help="8 kHz mono WAV to send")
    ap.add_argument("--heard", required=True, help="WAV to record what is heard into")
    ap.add_argument("--seconds", type=float, default=15)
    args = ap.parse_args()

    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.logConfig.level = 4
    cfg.logConfig.consoleLevel = 4
    cfg.medConfig.noVad = True
    cfg.medConfig.clockRate = 8000
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1"
    tcfg.publicAddress = "127.0.0.1"
    tcfg.tlsConfig.CaListFile = args.ca
    tcfg.tlsConfig.verifyServer = True
    tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
    ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
    ep.libStart()
    for c in ep.codecEnum2():
        ep.codecSetPriority(c.codecId, 255 if c.codecId.startswith("PCMU/") else 0)

    acfg = pj.AccountConfig()
    acfg.idUri = "sip:pjsua@127.0.0.1"
    acfg.natConfig.iceEnabled = False
    acfg.natConfig.sdpNatRewriteUse = 0
    acfg.natConfig.viaRewriteUse = 0
    acfg.natConfig.contactRewriteUse = 0
    acfg.mediaConfig.transportConfig.port = args.rtp_port
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    # SDES SRTP, mandatory, and only with TLS signalling.
    acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
    acfg.mediaConfig.srtpSecureSignaling = 1
    acc = pj.Account()
    acc.create(acfg)

    call = Call(acc, args.mic, args.heard)
    call.makeCall(args.call, pj.CallOpParam(True))
    pump(ep, 15, lambda: (call.confirmed and call.media_active) or call.disconnected)
    result = {"answered": call.confirmed and call.media_active, "status": call.status}
    if result["answered"]:
        si = call.getStreamInfo(0)
        result["codec"] = si.codecName
        pump(ep, args.seconds, lambda: call.disconnected)
        stat = call.getStreamStat(0)
        result["rx_packets"] = stat.rtcp.rxStat.pkt
        result["tx_packets"] = stat.rtcp.txStat.pkt
        result["rx_discard"] = stat.rtcp.rxStat.discard
        call.hangup(pj.CallOpParam(True))
        pump(ep, 5, lambda: call.disconnected)
    result["disconnected"] = call.disconnected
    print(json.dumps(result), flush=True)
    call.player = call.recorder = None
    del call
    del acc
    ep.libDestroy()
    return 0 if result["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
