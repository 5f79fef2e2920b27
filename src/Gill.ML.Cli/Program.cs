using System.CommandLine;

namespace Gill.ML.Cli;

/// <summary>Provides one top-level `gill` command (with its subcommands). Discovered at start-up.</summary>
internal interface ICommandProvider
{
    /// <summary>Builds the command.</summary>
    Command Build();
}

internal static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("gill: GILL multimodal models (frozen LM + CLIP + text-to-image generator, small trained mappings) on ML.NET and TorchSharp");
        var providers = typeof(Program).Assembly.GetTypes()
            .Where(t => !t.IsAbstract && !t.IsInterface && typeof(ICommandProvider).IsAssignableFrom(t))
            .Select(t => (ICommandProvider)Activator.CreateInstance(t)!)
            .Select(p => p.Build())
            .OrderBy(c => c.Name, StringComparer.Ordinal);
        foreach (var c in providers) root.Subcommands.Add(c);
        return root.Parse(args).Invoke();
    }
}
