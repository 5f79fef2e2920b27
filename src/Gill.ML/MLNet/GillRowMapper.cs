using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.MLNet;

/// <summary>
/// The one-row-at-a-time path (PredictionEngine, TransformerChain row mappers): outputs are computed for the current input
/// row on first access and cached by row position, so every output getter of the row shares one call.
/// </summary>
internal sealed class GillRowMapper : IRowToRowMapper
{
    private readonly GillTransformerBase _owner;
    private readonly (int Index, ImageSource Source)[] _columns;

    public GillRowMapper(GillTransformerBase owner, DataViewSchema inputSchema, (int Index, ImageSource Source)[] columns)
    {
        _owner = owner;
        _columns = columns;
        InputSchema = inputSchema;
        OutputSchema = GillSchema.BuildOutputSchema(inputSchema, owner.OutputColumns);
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        int nIn = InputSchema.Count;
        var set = new HashSet<int>();
        foreach (var c in dependingColumns)
        {
            if (c.Index < nIn) set.Add(c.Index);
            else foreach (var i in _columns) set.Add(i.Index);
        }
        return InputSchema.Where(c => set.Contains(c.Index)).ToArray();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        ArgumentNullException.ThrowIfNull(input);
        return new Row(this, input, new HashSet<int>(activeColumns.Select(c => c.Index)));
    }

    private sealed class Row : DataViewRow
    {
        private readonly GillRowMapper _parent;
        private readonly DataViewRow _input;
        private readonly HashSet<int> _active;
        private readonly GillBatch _batch;
        private readonly GillBatch.RowReader? _reader;
        private readonly int _nIn;
        private long _cached = -1;
        private bool _hasCache;

        public Row(GillRowMapper parent, DataViewRow input, HashSet<int> active)
        {
            _parent = parent;
            _input = input;
            _active = active;
            _nIn = parent.InputSchema.Count;
            var owner = parent._owner;
            var activeOutputs = new bool[owner.OutputColumns.Count];
            for (int k = 0; k < activeOutputs.Length; k++) activeOutputs[k] = active.Contains(_nIn + k);
            _batch = new GillBatch(owner.StageName, owner.InputColumns, parent._columns.Select(c => c.Source).ToArray(), owner.OutputColumns, activeOutputs, 1, owner.ImageFolder);
            if (activeOutputs.Any(a => a)) _reader = new GillBatch.RowReader(input, owner.InputColumns, parent._columns);
        }

        public override DataViewSchema Schema => _parent.OutputSchema;

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override bool IsColumnActive(DataViewSchema.Column column) =>
            column.Index < _nIn ? _input.IsColumnActive(_input.Schema[column.Index]) : _active.Contains(column.Index);

        private void Ensure()
        {
            long pos = _input.Position;
            if (_hasCache && pos == _cached) return;
            _batch.Reset();
            _hasCache = false;
            _batch.AddRow(pos, _reader!);
            _parent._owner.RunBatch(_batch);
            _cached = pos;
            _hasCache = true;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < _nIn) return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            if (!_active.Contains(column.Index))
                throw new InvalidOperationException($"{_parent._owner.StageName}: column '{column.Name}' is not active in this row.");
            return OutputGetters.Make<TValue>(_batch, _parent._owner.OutputColumns, column.Index - _nIn, static () => 0, Ensure);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing) _batch.Dispose();
            base.Dispose(disposing);
        }
    }
}
