from tradebus.cli import main

main()
