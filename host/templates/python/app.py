"""The {{name}} agent: answers calls to {{number}} with a voice model."""

from switchboard_agent import AgentBase, Session, config, hangup, say, tool, transfer


class Agent(AgentBase):
    name = "{{name}}"
    numbers = ["{{number}}"]

    def on_start(self, call):
        return Session(
            "You are a helpful assistant on a phone call. Keep answers short. "
            "Use `opening_hours` when the caller asks when we are open.",
            greeting="Hello! How can I help you? Press 0 for a person, or # to hang up.",
        )

    @tool("Opening hours of the business")
    def opening_hours(self):
        return {"hours": config.get("opening-hours", "Monday to Friday, 9 to 5")}

    def on_dtmf(self, digits):
        if digits == "0":
            return [say("Putting you through."), transfer(config.get("operator"))]
        if digits == "#":
            return [say("Goodbye."), hangup()]
