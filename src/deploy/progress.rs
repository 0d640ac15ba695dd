//! Where a roll-out reports what it does.

/// Where a roll-out reports progress: a pusher's `remote:` lines, or a command's output.
pub trait Progress {
    fn line(&mut self, text: &str);
    fn error(&mut self, text: &str);
    /// Asked just before the switch; `false` abandons the roll-out (the pusher left).
    fn proceed(&self) -> bool {
        true
    }
    /// The job run (`APP/deploy#N`) this roll-out belongs to, if any, so the
    /// release phase records itself as its child.
    fn run(&self) -> Option<String> {
        None
    }
}

/// Progress collected as text, for commands that answer when done.
#[derive(Debug, Default)]
pub struct TextProgress(pub String);

impl Progress for TextProgress {
    fn line(&mut self, text: &str) {
        self.0.push_str(text);
        self.0.push('\n');
    }
    fn error(&mut self, text: &str) {
        self.0.push_str(" !     ");
        self.0.push_str(text);
        self.0.push('\n');
    }
}
