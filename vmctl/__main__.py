from vmctl.cli.main import main

main()
