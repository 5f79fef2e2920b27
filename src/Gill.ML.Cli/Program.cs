using System.CommandLine;

namespace Gill.ML.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("gill: GILL multimodal models on ML.NET and TorchSharp");
        return root.Parse(args).Invoke();
    }
}
