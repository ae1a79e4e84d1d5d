# The engine child process re-imports __main__ under the spawn start method: keep the guard.
if __name__ == "__main__":
    from .cli import main

    main()
