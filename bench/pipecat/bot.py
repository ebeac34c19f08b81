"""Pipecat's Twilio server, built as Pipecat documents it, for Switchboard's benchmark.

The shape of Pipecat's `twilio-chatbot` example and its FastAPI WebSocket / Twilio serializer
docs: a FastAPI app whose `POST /` answers Twilio's voice webhook with TwiML
`<Connect><Stream url=".../ws">`, and whose `/ws` WebSocket runs one pipeline per call —
`FastAPIWebsocketTransport` with `TwilioFrameSerializer` (auto hang-up off: the benchmark's
caller ends each call), the user context aggregator, `OpenAIRealtimeLLMService` (speech to
speech, the model's server VAD taking the turns, as in Pipecat's OpenAI Realtime example), the
transport's output and the assistant aggregator. One process serves every call.

Left out to spare Pipecat work, never to add any: the example's local Silero VAD (the
realtime model detects turns), metrics, recording and the Twilio REST lookup of the caller.

Run by bench/pipecat/run.sh through tests/all/bridge_bench.rs:
`python bot.py --port P --openai-url ws://127.0.0.1:Q/v1/realtime --openai-key KEY`
"""

import argparse
import sys

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from loguru import logger
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import PipelineRunner
from pipecat.pipeline.task import PipelineParams, PipelineTask
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.openai.realtime.events import SessionProperties
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from starlette.responses import HTMLResponse

INSTRUCTIONS = "You are the receptionist of a small shop. Answer in one short sentence."

app = FastAPI()
options = argparse.Namespace()


@app.post("/")
async def voice(request: Request):
    """Twilio's voice webhook: connect the call's audio to our WebSocket."""
    stream = f"ws://{request.url.netloc}/ws"
    twiml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<Response><Connect><Stream url="{stream}"></Stream></Connect></Response>'
    )
    return HTMLResponse(content=twiml, media_type="application/xml")


@app.websocket("/ws")
async def media_stream(websocket: WebSocket):
    """One call: Twilio's media stream through a pipeline of its own."""
    await websocket.accept()
    _, call_data = await parse_telephony_websocket(websocket)
    serializer = TwilioFrameSerializer(
        stream_sid=call_data["stream_id"],
        call_sid=call_data["call_id"],
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    llm = OpenAIRealtimeLLMService(
        api_key=options.openai_key,
        base_url=options.openai_url,
        settings=OpenAIRealtimeLLMService.Settings(
            session_properties=SessionProperties(instructions=INSTRUCTIONS),
        ),
    )
    context = LLMContext([{"role": "user", "content": "Say hello!"}])
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(context)
    pipeline = Pipeline(
        [
            transport.input(),
            user_aggregator,
            llm,
            transport.output(),
            assistant_aggregator,
        ]
    )
    task = PipelineTask(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(transport, client):
        # The greeting.
        await task.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await task.cancel()

    # uvicorn owns the signals; collect garbage after each call, as the example does.
    await PipelineRunner(handle_sigint=False, force_gc=True).run(task)


def main():
    parser = argparse.ArgumentParser(description="Pipecat's Twilio server for the benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--openai-url", required=True)
    parser.add_argument("--openai-key", required=True)
    parser.add_argument("--log-level", default="INFO")
    parser.parse_args(namespace=options)
    logger.remove()
    logger.add(sys.stderr, level=options.log_level)
    uvicorn.run(app, host=options.host, port=options.port, access_log=False)


if __name__ == "__main__":
    main()
