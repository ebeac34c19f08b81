"""A front-desk receptionist on a voice model, in Python: greets, answers opening-hours
questions with a tool, takes messages (stored in kv), transfers to a person when the caller
asks, and hands the call to the `appointments` agent (keypad 2, or a caller who mentions an
appointment). The twin of plugins/receptionist (Rust)."""

from switchboard_agent import (
    AgentBase, HostError, Role, Session, ToolError, call, config, kv, log, say, tool,
)

# Phrases after which the caller clearly wants a person, even if the model misses it.
ASK_FOR_PERSON = ("speak to a person", "talk to a person", "real person", "human")

# The agent that handles appointments: a hand-off inside the call, not a SIP transfer.
APPOINTMENTS = "agent:appointments"


class Agent(AgentBase):
    name = "receptionist-py"
    description = "Receptionist: opening hours, messages, transfer to a person"
    numbers = ["2001"]

    def __init__(self):
        self.caller = ""
        self.transferring = False

    def on_start(self, info):
        self.caller = info.caller
        business = config.get("business-name", "")
        return Session(
            f"You are the friendly receptionist of {business}. Keep answers short: this is a "
            "phone call. Use `opening_hours` for opening times. If the caller wants to leave a "
            "message, collect their name, callback number and message, then call "
            "`take_message`. If the caller asks for a person, call `transfer_to_person`. "
            "Appointments are handled by the appointments desk: callers press 2 or mention "
            "their appointment to be passed on.",
            greeting=f"Thank you for calling {business}. How can I help you today?",
        )

    @tool("Opening hours of the business")
    def opening_hours(self):
        return {"hours": config.get("opening-hours", "")}

    @tool(
        "Store a message for the staff",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "callback_number": {"type": "string"},
                "message": {"type": "string"},
            },
            "required": ["name", "message"],
        },
    )
    def take_message(self, name, message, callback_number=None):
        if not message.strip():
            raise ToolError("the message is empty; ask the caller what to pass on")
        number = callback_number or self.caller
        id = len(kv.keys("message:")) + 1
        record = {"callback_number": number, "message": message, "name": name}
        try:
            kv.set_json(f"message:{id:06}", record)
        except HostError as e:
            raise ToolError(f"could not store the message: {e}")
        log.info(f"message {id} taken for {name}")
        return f"Message {id} saved. Tell the caller we will call back."

    @tool("Transfer the caller to the front desk")
    def transfer_to_person(self):
        if self.transferring:
            return "A transfer is already under way."
        try:
            call.say("One moment, I am putting you through.")
            call.transfer(config.get("front-desk", ""))
        except HostError as e:
            raise ToolError(str(e))
        self.transferring = True
        return "Transferring the caller to the front desk."

    def hand_to_appointments(self):
        """Hand the caller to the appointments agent, after a short word."""
        if self.transferring:
            return
        try:
            call.say("Of course, I am passing you to our appointments desk.")
        except HostError:
            pass
        try:
            call.transfer(APPOINTMENTS)
            self.transferring = True
        except HostError as e:
            log.warn(f"hand-off refused: {e}")

    def on_transcript(self, role, text, final):
        if role != Role.CALLER or not final:
            return
        lower = text.lower()
        if any(p in lower for p in ASK_FOR_PERSON):
            try:
                self.transfer_to_person()
            except ToolError as e:
                log.warn(f"transfer refused: {e}")
        elif "appointment" in lower:
            self.hand_to_appointments()

    def on_dtmf(self, digits):
        if digits == "0":
            try:
                self.transfer_to_person()
            except ToolError:
                pass
        elif digits == "2":
            self.hand_to_appointments()

    def on_transfer_result(self, target, error):
        self.transferring = False
        if error is not None:
            return say("Nobody is free at the moment. Can I take a message instead?")
