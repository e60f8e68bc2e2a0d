from sentiment.cli import main

main()
