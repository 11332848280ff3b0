"""Local development stack: emulator, exchange simulator, Lambda runner, orchestration."""
