//! What lorch shows of what it knows: the lines, tables and JSON documents of the commands,
//! apart from the commands that call them, so that another front (the dashboard of issue 28)
//! shows the same documents.

pub mod events;
pub mod logs;
pub mod queue;
pub mod run;
pub mod runs;
pub mod status;
