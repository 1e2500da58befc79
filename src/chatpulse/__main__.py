from chatpulse.cli import main

main()
