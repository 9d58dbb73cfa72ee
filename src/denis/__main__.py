from denis.cli import main

main()
