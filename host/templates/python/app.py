"""The {{name}} agent: greets the caller, answers with the voice model, offers one tool and a
keypad menu (0 for an operator, # to hang up). The host makes a new `Agent` for every call."""

from switchboard_agent import AgentBase, Session, config, hangup, say, tool, transfer


class Agent(AgentBase):
    name = "{{name}}"
    description = "{{title}}: a new Switchboard agent"
    numbers = ["{{number}}"]

    def on_start(self, call):
        business = config.get("business-name", "{{title}}")
        return Session(
            f"You answer the phone for {business}. Be brief and friendly. When the caller "
            "asks when we are open, call the `opening_hours` tool.",
            greeting=f"Hello, this is {business}. Press 0 for an operator, or tell me what "
            "you need.",
        )

    @tool("When we are open")
    def opening_hours(self):
        return "Monday to Friday, 9:00 to 17:00"

    def on_dtmf(self, digits):
        if digits == "0":
            return [say("Connecting you to an operator."), transfer("sip:operator@127.0.0.1")]
        if digits == "#":
            return [say("Goodbye."), hangup()]
        return say("Press 0 for an operator, or # to hang up.")
