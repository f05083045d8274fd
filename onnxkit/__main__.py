from onnxkit.cli.app import main

main()
