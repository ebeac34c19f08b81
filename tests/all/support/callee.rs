//! What the callee of a call the host places through a fake carrier does, whatever the carrier
//! (the fake Telnyx and Vonage play it with their own scripts `S` and wire events).

#[derive(Debug, Clone)]
pub enum Callee<S> {
    /// Answers, and the call runs as the script says.
    Answers(S),
    Busy,
    NoAnswer,
    /// Rings until the host hangs up.
    RingsOn,
}
