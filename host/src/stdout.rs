//! What the command line prints on standard output, written so that a reader who stops early
//! (`agent-relay call --list | head`) ends the program quietly instead of panicking the way
//! `println!` does on a closed pipe.

use std::fmt;
use std::io::{ErrorKind, Write};

/// Writes one line (`say!`) or text as it is (`say_raw!`) to standard output. When the reader
/// has gone (a broken pipe) there is nobody left to tell, so the process ends with success, as
/// `head`'s writers conventionally do; any other write error is reported on standard error and
/// ends it with failure.
pub fn write(args: fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| out.flush());
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("agent-relay: cannot write to standard output: {error}");
            std::process::exit(1)
        }
    }
}

/// `println!` for the command line's output (see [`write`]).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), true)
    };
}

/// `print!` for the command line's output (see [`write`]).
macro_rules! say_raw {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), false)
    };
}

pub(crate) use {say, say_raw};
